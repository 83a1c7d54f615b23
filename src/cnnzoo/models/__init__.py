"""Model families. Importing a family module registers its variants."""

from . import lenet  # noqa: F401
from . import resnet  # noqa: F401
