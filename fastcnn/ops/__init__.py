"""fastcnn's functional API: the same names, arguments and semantics as
:mod:`torch.nn.functional`, backed by fastcnn's kernels through ``torch.ops.fastcnn.*``."""

from .activation import guided_relu, relu
from .conv2d import conv2d
from .global_avg_pool2d import global_avg_pool2d
from .max_pool2d import max_pool2d

__all__ = ["conv2d", "global_avg_pool2d", "guided_relu", "max_pool2d", "relu"]
