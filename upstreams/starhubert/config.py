"""The starhubert flavour of the distilled student: its configuration and the entries' options are
the shared student's (``common/student/config.py``); ``-g`` is the official training yaml."""
from ..common.student.config import STAR as FLAVOUR
from ..common.student.config import PUBLISHED, StudentConfig, student_config
from ..common.student.upstream import StudentOptions

__all__ = ["FLAVOUR", "PUBLISHED", "StudentConfig", "StudentOptions", "student_config"]
