"""STaRHuBERT / STaRWavLM release files: the Lightning ``.ckpt`` (+ companion yaml), read and written
by the shared student codec (``common/student/formats.py``)."""
from ..common.student.formats import fingerprint_star as fingerprint
from ..common.student.formats import read_student, write_release

__all__ = ["fingerprint", "read_student", "write_release"]
