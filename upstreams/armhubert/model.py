"""The armhubert student: the shared implementation of ``common/student/model.py``."""
from ..common.student.model import StudentModel

__all__ = ["StudentModel"]
