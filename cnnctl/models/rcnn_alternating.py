"""Faster R-CNN's 4-step alternating training (Ren et al. 2015, sec. 3.2), the paper's main recipe:

1. train the RPN, with its own copy of the (pretrained) backbone, end to end for proposals;
2. train a separate Fast R-CNN detector, on the other copy of the backbone, with step 1's proposals
   (the two networks share no convolutional layers yet);
3. put the RPN head on the detector's backbone, keep that backbone fixed and fine-tune the layers
   unique to the RPN (now the convolutions are shared);
4. keep the shared convolutions fixed and fine-tune the layers unique to the detector.

``model.alternating = [e1, e2, e3, e4]`` gives each step's epochs (they add up to ``train.epochs``).
The stage is a function of the epoch (``stage_of_epoch``); the detect task's ``TrainingStages``
callback sets it at each epoch's start and retraces the step functions. The paper's Table 2 shows
the shared, 4-step network at 59.9 mAP (ZF, VOC 2007) against 58.7 unshared (after step 2).

Fixed layers run in inference mode (their batch norm statistics are fixed too). Until step 3 the
detector's proposals come from the step-1 network (``rpn_backbone``), in training, validation and
inference, so the validation mAP of steps 1-2 is that of the unshared pair; from step 3 on, one
backbone serves both, and ``rpn_backbone`` is no longer used (it stays in the file, unused).
"""

from __future__ import annotations

import keras

from cnnctl.models.rcnn import FasterRCNN


def check_stage_epochs(stage_epochs) -> tuple[int, int, int, int]:
    epochs = tuple(int(e) for e in stage_epochs)
    if len(epochs) != 4 or min(epochs) < 1 or any(int(e) != e for e in stage_epochs):
        raise ValueError(f"alternating = {list(stage_epochs)}: give the epochs of the 4 steps of alternating "
                         "training, each at least 1, e.g. [2, 2, 1, 1] (or [] for approximate joint training)")
    return epochs


@keras.saving.register_keras_serializable(package="cnnctl")
class AlternatingFasterRCNN(FasterRCNN):
    """Faster R-CNN trained by the 4-step alternating scheme (module docstring). ``stage`` (1-4) is a
    Python attribute read when the step functions are traced, and saved in the config, so that a
    ``best.keras`` from step 2 still draws its proposals from the step-1 network."""

    PARTS = ("backbone", "rpn", "detector", "rpn_backbone")

    def __init__(self, backbone, rpn, detector, rpn_backbone, num_classes: int, feature_stride: int,
                 rpn_stride: int, stage_epochs=(1, 1, 1, 1), stage: int = 1, **settings):
        super().__init__(backbone, rpn, detector, num_classes, feature_stride, rpn_stride, **settings)
        self.rpn_backbone = rpn_backbone
        self.stage_epochs = check_stage_epochs(stage_epochs)
        self.stage = int(stage)

    def _extra_config(self) -> dict:
        return {**super()._extra_config(), "stage_epochs": list(self.stage_epochs), "stage": self.stage}

    def stage_of_epoch(self, epoch: int) -> int:
        """0-based epoch -> its step, 1..4 (epochs past the last step stay in step 4)."""
        end = 0
        for stage, n in enumerate(self.stage_epochs, start=1):
            end += n
            if epoch < end:
                return stage
        return 4

    def stage_variables(self, stage: int) -> list:
        return {1: self.rpn_backbone.trainable_variables + self.rpn.trainable_variables,
                2: self.backbone.trainable_variables + self.detector.trainable_variables,
                3: self.rpn.trainable_variables,
                4: self.detector.trainable_variables}[stage]

    # ------------------------------------------------------------------ evaluation and inference
    def _proposal_features(self, images, features, training):
        """The map the RPN reads: the step-1 network's until step 3, the shared one after."""
        return self.rpn_backbone(images, training=training) if self.stage <= 2 else features

    def _train_regions(self, images, features, gt_boxes, seeds, training):
        return super()._train_regions(images, self._proposal_features(images, features, training), gt_boxes,
                                      seeds, training)

    def _test_regions(self, images, features):
        return super()._test_regions(images, self._proposal_features(images, features, False))

    # ------------------------------------------------------------------ training: one step of the stage
    def train_step(self, data):
        import tensorflow as tf

        images, gt_boxes, gt_classes = data
        gt_boxes, gt_classes = tf.cast(gt_boxes, tf.float32), tf.cast(gt_classes, tf.int32)
        seeds = self._image_seeds(tf.shape(images)[0])
        stage = self.stage
        with tf.GradientTape() as tape:
            if stage in (1, 3):                       # the RPN's loss, on its own (1) or the fixed shared (3) map
                features = (self.rpn_backbone(images, training=True) if stage == 1
                            else self.backbone(images, training=False))
                logits, deltas = self._rpn(features, True)
                parts = self._rpn_losses(logits, deltas, gt_boxes, seeds)
            else:                                     # the detector's loss on the fixed RPN's proposals
                features = self.backbone(images, training=stage == 2)
                logits, deltas = self._rpn(self._proposal_features(images, features, False), False)
                proposals, valid = self.proposals(tf.stop_gradient(logits), tf.stop_gradient(deltas),
                                                  self.settings["post_nms_train"])
                parts = self._detector_losses(features, proposals, valid, gt_boxes, gt_classes, seeds, True)
            loss = tf.add_n(list(parts.values()))
            scaled = self.optimizer.scale_loss(loss) if hasattr(self.optimizer, "scale_loss") else loss
        weights = self.stage_variables(stage)
        self.optimizer.apply(tape.gradient(scaled, weights), weights)
        return self._report({"loss": loss, **parts})


class TrainingStages(keras.callbacks.Callback):
    """For a model trained in stages (``stage_of_epoch``): set each epoch's stage before its first step
    and retrace the train and test functions when it changes; the stage goes into the epoch's logs.
    Any other model is left alone."""

    def on_epoch_begin(self, epoch, logs=None):
        if not hasattr(self.model, "stage_of_epoch"):
            return
        stage = self.model.stage_of_epoch(epoch)
        if stage != self.model.stage:
            self.model.stage = stage
            self.model.make_train_function(force=True)
            self.model.make_test_function(force=True)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and hasattr(self.model, "stage_of_epoch"):
            logs["stage"] = float(self.model.stage)
