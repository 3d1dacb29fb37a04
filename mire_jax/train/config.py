"""Defaults of every training config (configs/*.py override what differs); the schema train/train.py accepts."""
import ml_collections


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.phase = "pretrain"              # "pretrain" (pooling head trains) | "finetune" (+ BERT and projection)
    c.epochs = 0                      # > 0: train this many epochs (steps from the data set's size at run time)
    c.total_steps = 1000              # used when epochs == 0
    c.batch_size = 512                # GLOBAL batch (all devices, all hosts)
    c.negatives_group = 128           # consecutive examples of the global batch sharing in-batch negatives
    c.seed = 0
    c.log_every = 10
    c.checkpoint_every = 500
    c.keep_checkpoints = 3
    c.lr = 1e-4
    c.warmup_steps = 300
    c.weight_decay = 0.0
    c.clip_norm = 0.0                 # 0: no clipping
    c.accum_steps = 1                 # micro-batches per update, each of whole negatives groups
    c.temperature = 0.3
    c.maxsim_block = 0                # passages per MaxSim block in the loss (0: automatic, cache-sized on CPU)
    c.dropout = True                  # BERT dropout while training, as the published code
    c.tokenizer = ""                  # vocab.txt or tokenizer folder
    c.trainable = ()                  # top-level params that train ("bert", "linear", "pooling"); (): the phase's

    c.model = ml_collections.ConfigDict()
    c.model.dir = ""                  # a mire-jax model folder (python -m mire_jax.convert import-hf ...)
    c.model.preset = "base"           # random init of this size when no dir (tests, smoke runs): base|tiny|tiny_siglip
    c.model.seed = 0
    c.model.dtype = "float32"         # "bfloat16": bf16 matmuls, float32 params
    c.model.residual = False          # the fusion ablation head

    c.data = ml_collections.ConfigDict()
    c.data.builder = "vid2r"          # a name of mire_jax.data.builders.BUILDERS
    c.data.builder_config = ""        # e.g. "EVQA_data" for m2kr
    c.data.data_dir = ""              # tfds data dir ("" = WORKDIR/tfds)
    c.data.manual_dir = ""            # downloaded files; the dataset is built from them on first use
    c.data.split = "train"
    c.data.reshuffle_each_epoch = True  # False: the same order every epoch (the published runs)
    c.data.splits = ("train",)        # for train/cache_vision.py
    c.data.image_root = ""
    c.data.image_policy = "fail"      # "fail" | "skip" a missing or corrupt image
    c.data.vision_cache_dir = ""      # train from cached vision features (train/cache_vision.py)
    c.data.text_cache_dir = ""        # pre-training without dropout: cache the frozen text tower's outputs here
    c.data.text_cache_length_bucket = 0  # > 0: cache passages encoded trimmed to a multiple of this (fewer FLOPs)
    c.data.query_maxlen = 40
    c.data.doc_maxlen = 400
    c.data.attend_to_mask_tokens = True
    c.data.use_instruction = False
    c.data.read_threads = 8
    c.data.worker_count = 0

    c.validation = ml_collections.ConfigDict()  # in-batch loss and accuracy, dropout off, whole negatives groups
    c.validation.holdout = 0          # records of the training split held out for validation (seeded choice)
    c.validation.split = ""           # or another split of the same data set ("train": the training records)
    c.validation.every_steps = 0      # 0: after every epoch (and at the end)

    c.vision_cache = ml_collections.ConfigDict()
    c.vision_cache.dtype = "float16"
    c.vision_cache.shard_size = 1024
    c.vision_cache.batch_size = 64
    c.vision_cache.read_threads = 8

    c.distributed = ml_collections.ConfigDict()
    c.distributed.coordinator = ""    # host:port of process 0 (or MIRE_COORDINATOR)
    c.distributed.num_processes = 0
    c.distributed.process_id = -1
    c.distributed.auto = False        # let JAX detect the cluster (TPU pods, SLURM)
    return c
