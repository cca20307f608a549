"""Training DVIS-DAQ: data (YouTube-VIS format, synthetic videos), losses, the three stages.

* ``data``, ``augment``, ``sampler`` -- YouTube-VIS datasets, clip sampling and augmentation,
  per-frame targets, the easy-to-hard curriculum;
* ``points``, ``losses``, ``matcher``, ``criterion`` -- point sampling, BCE / dice / class losses,
  the Hungarian matchers (image, frame, new-instance, video) and the set criteria;
* ``optim``, ``engine``, ``norm``, ``model_setup``, ``config`` -- AdamW + schedule + clipping, the
  resumable training loop, trainable batch norm for from-scratch backbones, stage models and
  export, :class:`~daq_train.config.TrainConfig` presets;
* ``stage_segmenter``, ``stage_tracker`` (+ ``tracker_step``), ``stage_refiner``, ``run`` -- the
  three stages and running them into a run directory (``daq-label train``);
* ``synthetic*`` -- the procedural synthetic video generator (``daq-label synth``).
"""
