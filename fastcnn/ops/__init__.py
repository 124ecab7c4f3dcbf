"""fastcnn's functional API: the same names, arguments and semantics as
:mod:`torch.nn.functional`, backed by fastcnn's kernels through ``torch.ops.fastcnn.*``."""

from .activation import guided_relu, relu
from .conv2d import conv2d
from .conv_algorithm import get_conv_algorithm, set_conv_algorithm, use_conv_algorithm
from .global_avg_pool2d import global_avg_pool2d
from .max_pool2d import max_pool2d

__all__ = [
    "conv2d",
    "get_conv_algorithm",
    "global_avg_pool2d",
    "guided_relu",
    "max_pool2d",
    "relu",
    "set_conv_algorithm",
    "use_conv_algorithm",
]
