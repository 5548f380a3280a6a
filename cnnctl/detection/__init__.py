"""Object detection's geometry and training targets (R-CNN, Fast R-CNN, Faster R-CNN): boxes, anchors,
samplers. Models live in ``cnnctl.models``; RoI pooling in ``cnnctl.layers``."""
