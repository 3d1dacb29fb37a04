"""The data root a reproduction reads (`--data-root D`): where each download goes, and which files each stage needs.

It is the project's `data/` folder (configs/eval.py, configs/mire_*.py) with the models beside it, every benchmark
folder in its real download layout with its images inside it (symbolic links are fine: COCO is shared by OK-VQA
and A-OKVQA):

    D/models/mire_base_init/        ColBERTv2 + CLIP ViT-B/32 as a mire-jax model folder (pre-training starts here;
                                    its text tower also retrieves the knowledge base for ViD2R)
    D/models/mire_large_init/       the same with CLIP ViT-L/14-336 (--preset large)
    D/llava/llava_v1_5_mix665k.json, lvis_instruct4v_220k.json   the visual-instruction dialogues (ViD2R)
    D/wiki6m/Wiki6M_ver_1_0.jsonl[.gz]                            the knowledge base of the conversion
    D/vid2r/images/{coco,gqa,ocr_vqa,textvqa,vg}/...               the dialogues' images
    D/vid2r/ViD2R.json              optional: a ViD2R built elsewhere, used when the dialogues are absent
    D/okvqa/RAVQA_v2_data/okvqa/pre-extracted_features/passages/  OKVQA-GS (retriever_*.json, the corpus CSV)
    D/okvqa/{all_blocks.txt[.gz], passage_id_to_line_id.json, *2014_pairs_cap_combine_sum.txt,
             mscoco_val2014_annotations.json}                     OKVQA-WK11M
    D/okvqa/images/coco/{train2014,val2014}/                      the OK-VQA images
    D/remuq/{train.json, test.json, open_corpus_195837.csv, webqa/imgs.tsv, webqa/imgs.lineidx}
    D/m2kr/{EVQA,Infoseek}_{data,passages}/..., D/m2kr/images/{EVQA,Infoseek}/   the M2KR hub copy
    D/aokvqa/{aokvqa_v1p0_train.json, aokvqa_v1p0_val.json, images/coco/{train2017,val2017}/}

The generated world of `--preset demo` is written to D/world (`python -m mire_jax.demo.world`'s layout).
"""
from __future__ import annotations

import dataclasses
import os

OKVQA_GS_DIR = os.path.join("RAVQA_v2_data", "okvqa", "pre-extracted_features", "passages")
DIALOGUE_FILES = ("llava_v1_5_mix665k.json", "lvis_instruct4v_220k.json")
KB_FILE = "Wiki6M_ver_1_0.jsonl"
INIT_MODELS = {"base": "mire_base_init", "large": "mire_large_init"}
WORLD = "world"


@dataclasses.dataclass(frozen=True)
class BenchmarkSpec:
    """One evaluation benchmark in the data root.

    Attributes:
      key: the reproduction's name (configs/eval.py's arg for the paper's sets; "world_<split>" for the world).
      paper: its name in the paper's tables (None: the generated world).
      loader: the `mire_jax.eval.benchmarks` loader name ("synthetic": the generated world's).
      folder: its folder under the data root.
      files: files (relative to the folder) it needs, fingerprinted.
      images: its image folder (relative), which must exist.
      split: the split evaluated ("" = the loader's default, MIRe's).
    """
    key: str
    paper: str | None
    loader: str
    folder: str
    files: tuple[str, ...]
    images: str = ""
    split: str = ""


@dataclasses.dataclass(frozen=True)
class FinetuneSpec:
    """One fine-tuning set: configs/mire_base_finetune.py's arg, the benchmark it is evaluated on, the training
    data's manual dir and image root (relative to the data root) and the files it needs."""
    key: str
    benchmark: str
    manual_dir: str
    image_root: str
    files: tuple[str, ...]


PAPER_BENCHMARKS = {
    "okvqa_gs": BenchmarkSpec("okvqa_gs", "OKVQA-GS", "okvqa_gs", "okvqa",
                              (os.path.join(OKVQA_GS_DIR, "retriever_test.json"),
                               os.path.join(OKVQA_GS_DIR, "okvqa_full_clean_corpus.csv")), "images"),
    "okvqa_wk11m": BenchmarkSpec("okvqa_wk11m", "OKVQA-WK11M", "okvqa_wk11m", "okvqa",
                                 ("test2014_pairs_cap_combine_sum.txt", "all_blocks.txt",
                                  "passage_id_to_line_id.json", "mscoco_val2014_annotations.json"), "images"),
    "remuq": BenchmarkSpec("remuq", "ReMuQ", "remuq", "remuq",
                           ("test.json", "open_corpus_195837.csv", "webqa/imgs.lineidx"), "webqa/imgs.tsv"),
    "evqa": BenchmarkSpec("evqa", "E-VQA", "m2kr_evqa", "m2kr", ("EVQA_data", "EVQA_passages"), "images/EVQA"),
    "infoseek": BenchmarkSpec("infoseek", "InfoSeek", "m2kr_infoseek", "m2kr", ("Infoseek_data", "Infoseek_passages"),
                              "images/Infoseek"),
    "aokvqa": BenchmarkSpec("aokvqa", "A-OKVQA", "aokvqa", "aokvqa", ("aokvqa_v1p0_val.json",), "images/coco/val2017"),
}
PAPER_FINETUNE = {
    "evqa": FinetuneSpec("evqa", "evqa", "m2kr", os.path.join("m2kr", "images", "EVQA"), ("m2kr/EVQA_data",)),
    "infoseek": FinetuneSpec("infoseek", "infoseek", "m2kr", os.path.join("m2kr", "images", "Infoseek"),
                             ("m2kr/Infoseek_data",)),
    "okvqa_gs": FinetuneSpec("okvqa_gs", "okvqa_gs", os.path.join("okvqa", OKVQA_GS_DIR),
                             os.path.join("okvqa", "images"),
                             tuple(os.path.join("okvqa", OKVQA_GS_DIR, f) for f in
                                   ("retriever_train.json", "retriever_testdev.json"))),
    "remuq": FinetuneSpec("remuq", "remuq", "remuq", "", ("remuq/train.json", "remuq/webqa/imgs.lineidx")),
    "aokvqa": FinetuneSpec("aokvqa", "aokvqa", "aokvqa", os.path.join("aokvqa", "images"),
                           ("aokvqa/aokvqa_v1p0_train.json",)),
}
WORLD_BENCHMARKS = {
    f"world_{split}": BenchmarkSpec(f"world_{split}", None, "synthetic", WORLD, ("manifest.json",), "images", split)
    for split in ("zeroshot", "seen")
}
WORLD_FINETUNE = {"world": FinetuneSpec("world", "world_seen", os.path.join(WORLD, "finetune"),
                                        os.path.join(WORLD, "images"), (os.path.join(WORLD, "finetune", "train.jsonl"),))}


class DataLayout:
    """Paths of the data root `root` (see the module docstring)."""

    def __init__(self, root: str):
        self.root = os.path.abspath(root)

    def path(self, *parts: str) -> str:
        return os.path.join(self.root, *parts)

    def init_model(self, size: str = "base") -> str:
        return self.path("models", INIT_MODELS[size])

    @staticmethod
    def _first(candidates: list[str]) -> str:
        return next((c for c in candidates if os.path.exists(c)), candidates[0])

    def dialogues(self) -> list[str]:
        """The dialogue files present (each as .json, .jsonl or either gzipped)."""
        found = []
        for name in DIALOGUE_FILES:
            stem = name[:-len(".json")]
            options = [self.path("llava", stem + ext) for ext in (".json", ".jsonl", ".json.gz", ".jsonl.gz")]
            found += [p for p in options if os.path.exists(p)][:1]
        return found

    def knowledge_base(self) -> str:
        return self._first([self.path("wiki6m", KB_FILE), self.path("wiki6m", KB_FILE + ".gz")])

    def vid2r_images(self) -> str:
        return self.path("vid2r", "images")

    def vid2r_prebuilt(self) -> str:
        return self._first([self.path("vid2r", "ViD2R.json"), self.path("vid2r", "ViD2R_all.json")])

    def world(self) -> str:
        return self.path(WORLD)

    # benchmarks and fine-tuning sets ---------------------------------------------------------------------------

    def benchmark_root(self, spec: BenchmarkSpec) -> str:
        return self.path(spec.folder)

    def benchmark_files(self, spec: BenchmarkSpec) -> dict[str, str]:
        files = {}
        for rel in spec.files:
            path = self.path(spec.folder, rel)
            if rel == "all_blocks.txt":
                path = self._first([path, path + ".gz"])
            files[rel] = path
        return files

    def benchmark_present(self, spec: BenchmarkSpec) -> dict[str, str]:
        return {"images": self.path(spec.folder, spec.images)} if spec.images else {}

    def finetune_files(self, spec: FinetuneSpec) -> dict[str, str]:
        return {rel: self.path(rel) for rel in spec.files}

    def finetune_dirs(self, spec: FinetuneSpec) -> tuple[str, str]:
        """(manual dir, image root or "")."""
        return self.path(spec.manual_dir), self.path(spec.image_root) if spec.image_root else ""


def load_benchmark(layout: DataLayout, spec: BenchmarkSpec, **loader_options):
    """The benchmark of `spec` from the data root (the generated world's splits through its own loader);
    `loader_options`: e.g. M2KR's `passages_split`."""
    if spec.loader == "synthetic":
        from mire_jax.demo.world import load_synthetic
        return load_synthetic(layout.benchmark_root(spec), spec.split)
    from mire_jax.eval.benchmarks import load_benchmark as load
    options = dict(loader_options)
    split = options.pop("split", None) or spec.split or None
    return load(spec.loader, layout.benchmark_root(spec), split=split, **options)
