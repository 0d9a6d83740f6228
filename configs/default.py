r"""Default experiment: a small pre-LN Transformer encoder classifying scikit-learn's digits.

Each 8x8 image is a sequence of 64 pixel-intensity tokens; a learned CLS vector is pooled
and classified into 10 digits. The data ships inside scikit-learn, so this runs offline.

Launch (CPU, about 1-2 minutes on 2 cores; see README "Results"):

  python launch.py --config configs/default.py --workdir runs/digits

Options through the config argument (``key=value`` separated by commas):

  python launch.py --config configs/default.py:kernel=dot_product,smoke

and any field by flag, e.g. ``--config.train.num_steps=500``.
"""

from __future__ import annotations

import ml_collections

from attnjax.config_args import attention_config, parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the digits experiment; ``arg``: ``kernel=<name>``, ``smoke`` (a 3-step check)."""
  args = parse_arg(arg, kernel="dot_product", smoke=False)
  config = ml_collections.ConfigDict()
  config.name = "digits"                     # run name, used for the default --workdir
  config.seed = 0                            # initialisation, dropout and data order

  config.data = ml_collections.ConfigDict()
  config.data.name = "digits"                # a name registered in attnjax.data
  config.data.data_dir = ""                  # TFDS dir; "" = $ATTNJAX_DATA_DIR or ~/.cache/attnjax/tfds
  config.data.eval_split = "test"            # split used for periodic and final evaluation
  config.data.worker_count = 0               # Grain worker processes (0 = in the main process)
  config.data.read_threads = 0               # tiny records: threaded reads cost more than they save
  config.data.pack = False                   # first-fit packing into rows with segment_ids (text datasets only)

  config.task = ml_collections.ConfigDict()
  config.task.name = "classification"        # classification | regression | masked_lm (attnjax.train.tasks)

  config.init = ml_collections.ConfigDict()
  config.init.hf_path = ""                   # initial encoder: Hugging Face BERT dir, or "minilm"; "" = random
  config.init.workdir = ""                   # or the latest checkpoint of an attnjax run (e.g. MLM pretraining)

  # Self-pretraining (Amos, Berant & Gupta 2023, "Never Train from Scratch"): first masked-LM
  # on this task's own train inputs in <workdir>/self_pretrain, then this run starts from that
  # encoder. Data without a [MASK] token (bytes, pixels, ListOps) gets one extra id.
  config.self_pretrain = ml_collections.ConfigDict()
  config.self_pretrain.num_steps = 0         # masked-LM steps before training; 0 = off
  config.self_pretrain.mask_rate = 0.15      # BERT masking: share of tokens selected, 80/10/10
  config.self_pretrain.learning_rate = 0.0   # peak learning rate; 0 = config.optimizer.learning_rate

  config.model = ml_collections.ConfigDict()
  config.model.preset = ""                   # a size preset (tiny, mini, small, base, ...) or "" for the fields below
  config.model.num_layers = 2                # encoder blocks
  config.model.hidden_size = 64              # token width
  config.model.num_heads = 4                 # attention heads
  config.model.mlp_dim = 128                 # feed-forward hidden width
  config.model.dropout_rate = 0.1            # embeddings and residual branches
  config.model.attention_dropout_rate = 0.0  # attention probabilities (applied in the kernel)
  config.model.pre_layer_norm = True         # pre-LN blocks (False: post-LN as BERT)
  config.model.position = "learned"          # learned | sinusoidal | none
  config.model.add_cls_token = True          # learned CLS vector in front of the pixels
  config.model.pooling = "cls"               # cls | mean | attention (additive, article 5.2)
  config.model.head_dropout_rate = 0.0       # before the classification layer
  config.model.dtype = "float32"             # computation dtype: float32 | bfloat16 | float16 (params stay float32)
  config.model.remat = False                 # rematerialise each block in the backward pass
  config.model.scan_layers = False           # nn.scan over blocks: faster compiles for deep models
  # kernel: a name in attnjax.kernels.list_kernels(); every other key is one of the kernels'
  # options, unset (None: the kernel's default), e.g. --config.model.attention.num_features=256.
  config.model.attention = attention_config(args["kernel"])

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.name = "adamw"            # adamw | sgd
  config.optimizer.learning_rate = 1e-3      # peak learning rate
  config.optimizer.schedule = "cosine"       # cosine | linear | constant, after warmup
  config.optimizer.warmup_steps = 100        # linear warmup from 0
  config.optimizer.end_lr_factor = 0.0       # final learning rate / peak
  config.optimizer.weight_decay = 0.05       # decoupled, matrices only
  config.optimizer.b1 = 0.9
  config.optimizer.b2 = 0.999
  config.optimizer.eps = 1e-8
  config.optimizer.grad_clip_norm = 1.0      # global-norm clipping; 0 disables

  config.train = ml_collections.ConfigDict()
  config.train.num_steps = 1200              # optimizer steps
  config.train.batch_size = 64               # global batch size
  config.train.eval_batch_size = 256         # global eval batch size
  config.train.label_smoothing = 0.0
  config.train.log_every = 50                # steps between train metric records
  config.train.eval_every = 300              # steps between evaluations (and at the end)
  config.train.checkpoint_every = 300        # steps between checkpoints (and at the end)
  config.train.keep_checkpoints = 2          # newest checkpoints kept on disk
  config.train.attention_images = False      # attention maps of one eval example to TensorBoard at each eval
  config.train.keep_best_by = "accuracy"     # also keep the best eval checkpoint by this metric ("" = off)
  config.train.best_mode = "max"             # max | min, for keep_best_by
  config.train.async_checkpoints = True      # write checkpoints in a background thread
  config.train.microbatches = 1              # gradient accumulation: microbatches per step
  config.train.nan_policy = "stop"           # stop | skip | off: on a non-finite loss or gradient
  config.train.peak_flops_per_device = 0.0   # for MFU; 0 = datasheet value, or measured on CPU

  config.parallel = ml_collections.ConfigDict()
  config.parallel.strategy = "jit"           # jit (1 device) | pmap (data parallel) | mesh (sharded jit)
  config.parallel.mesh = ml_collections.ConfigDict()
  config.parallel.mesh.data = -1             # data-parallel axis (-1 = all remaining devices)
  config.parallel.mesh.fsdp = 1              # parameter/optimizer sharding axis (ZeRO-3 style)
  config.parallel.mesh.sequence = 1          # sequence (context) parallel axis: ring attention over it
  config.parallel.mesh.tensor = 1            # tensor-parallel axis (attention heads, MLP units)
  config.parallel.distributed = "auto"       # auto | on | off: jax.distributed.initialize (multi-host)
  config.parallel.coordinator_address = ""   # e.g. 10.0.0.1:1234; "" = from the cluster environment
  config.parallel.num_processes = 0          # with coordinator_address: total processes
  config.parallel.process_id = -1            # with coordinator_address: this process

  if args["smoke"]:
    config.train.num_steps = 3
    config.train.log_every = 1
    config.train.eval_every = 3
    config.train.checkpoint_every = 3
    config.optimizer.warmup_steps = 1
    config.model.num_layers = 1
    config.model.hidden_size = 32
    config.model.mlp_dim = 64
  return config
