"""Model families. Importing a family module registers its variants."""

from . import lenet  # noqa: F401
from . import resnet  # noqa: F401
from . import mobilenetv1  # noqa: F401
from . import mobilenetv2  # noqa: F401
from . import mobilenetv3  # noqa: F401
from . import pnasnet  # noqa: F401
from . import dncnn  # noqa: F401
from . import alexnet  # noqa: F401
from . import vgg  # noqa: F401
from . import nin  # noqa: F401
from . import googlenet  # noqa: F401
from . import bninception  # noqa: F401
from . import inception_v3  # noqa: F401
from . import inception_v4  # noqa: F401
from . import xception  # noqa: F401
from . import preresnet  # noqa: F401
from . import resnet_attn  # noqa: F401
from . import densenet  # noqa: F401
from . import shake_shake  # noqa: F401
from . import airbench  # noqa: F401
