r"""Zero-shot evaluation as the published runs evaluate (public repository yeongjoonJu/MIRe,
runs/evaluate_retrieval.py): the top 100 passages of every query, queries of 64 and passages of 384 word pieces,
[MASK] query padding neither attended nor kept. The arg names the benchmark, read from its download folder:

| arg         | root          | corpus                                   |
|-------------|---------------|------------------------------------------|
| okvqa_gs    | data/okvqa    | RA-VQA Google-Search passages            |
| okvqa_wk11m | data/okvqa    | the 11M Wikipedia blocks                 |
| remuq       | data/remuq    | ReMuQ's open corpus                      |
| evqa        | data/m2kr     | M2KR E-VQA passages                      |
| infoseek    | data/m2kr     | M2KR InfoSeek passages                   |
| aokvqa      | data/aokvqa   | the rationales of the val questions      |
| vid2r_val   | data/vid2r    | ViD2R passages of the first 5000 queries |
| fashioniq   | data/fashioniq| the val product images (image-only)      |
| webqa       | data/webqa    | WebQA's image+caption and text sources   |
| fvqa        | data/fvqa     | FVQA's fact sentences                    |
| wit         | data/wit      | VL-ICT documents from WIT's val shards   |

    python eval/evaluate.py --config configs/eval.py:okvqa_gs --checkpoint runs/pretrain/model --workdir runs/eval

Images kept elsewhere (e.g. the COCO images MIRe keeps in data/vid2r/images): --config.image_root=/path/to/images.
The M2KR sets (evqa, infoseek) search the passage split the published evaluation loads, `test_passages`, whatever
the query split (`--config.passages_split`; "" = the query split's own `<split>_passages`).
"""
import ml_collections

# The passages the published evaluation searches for M2KR sets (dataset/eval_loaders.py: M2KRLoader).
M2KR_PUBLISHED_PASSAGES = "test_passages"
ROOTS = {"okvqa_gs": "data/okvqa", "okvqa_wk11m": "data/okvqa", "remuq": "data/remuq", "evqa": "data/m2kr",
         "infoseek": "data/m2kr", "aokvqa": "data/aokvqa", "vid2r_val": "data/vid2r", "fashioniq": "data/fashioniq",
         "fashioniq_dress": "data/fashioniq", "fashioniq_shirt": "data/fashioniq",
         "fashioniq_toptee": "data/fashioniq", "webqa": "data/webqa", "fvqa": "data/fvqa", "wit": "data/wit"}


def get_config(arg: str = "okvqa_gs") -> ml_collections.ConfigDict:
    if arg not in ROOTS:
        raise ValueError(f"unknown benchmark {arg!r}; known: {sorted(ROOTS)}")
    c = ml_collections.ConfigDict()
    c.benchmark = arg                # a name of mire_jax.eval.benchmarks.LOADERS (or one of its aliases)
    c.root = ROOTS[arg]              # the download folder, laid out as the original
    c.split = ""                     # "" = the split MIRe evaluates
    c.image_root = ""                # "" = the images inside `root`; else the folder holding them (ReMuQ, WebQA: the
                                     # folder of imgs.tsv)
    c.passages_split = M2KR_PUBLISHED_PASSAGES if arg in ("evqa", "infoseek") else ""  # M2KR only; "" = own split
    c.protocol = "published"         # "published" (MIRe's evaluation) | "textbook"; see docs/evaluation.md
    c.k = 100
    c.query_maxlen = 64
    c.doc_maxlen = 384
    c.attend_to_mask_tokens = False  # the published evaluation tokenizer
    c.batch_size = 32
    c.shard_size = 10_000
    c.seed = 0
    c.tokenizer = ""                 # "" = the vocab.txt / tokenizer.json in the checkpoint folder
    c.index = ml_collections.ConfigDict()  # LateInteractionIndex options (mire_jax/index); None = calibrated
    c.index.mode = "auto"            # "auto" | "scann" | "exact"
    c.index.num_leaves = ml_collections.FieldReference(None, field_type=int)
    c.index.leaves_to_search = ml_collections.FieldReference(None, field_type=int)
    c.index.neighbors_per_token = ml_collections.FieldReference(None, field_type=int)
    c.index.rerank_passages = ml_collections.FieldReference(None, field_type=int)  # None = calibrated
    c.index_recall_sample = 256      # benchmark queries on which the index's recall against exact is measured
    return c
