"""The COCO caption evaluation (pycocoevalcap, the toolkit every captioning paper reports): BLEU-1..4,
METEOR, ROUGE-L and CIDEr(-D) of a results file, after the toolkit's PTB tokenisation.

`python -m updown_vqa.evaluate --task caption --annotations captions_val2014.json --results R.json`.
The tokeniser and METEOR are Java programs shipped in the pycocoevalcap wheel: a Java runtime must be
on PATH (the project's set-up installs one where missing). SPICE is left out: it downloads Stanford
CoreNLP models at first use. Exactly the images of the results are scored, against all their references.
"""

from __future__ import annotations

import logging
import shutil
from collections import Counter

from updown_vqa.captioning.data import read_captions
from updown_vqa.core.cache import read_json
from updown_vqa.core.errors import UpdownError
from updown_vqa.core.io import write_json

log = logging.getLogger(__name__)
METRICS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")
ALL_KARPATHY_SPLITS = ("train", "restval", "val", "test")
_SHOWN = 5


def _few(ids) -> str:
    ids = sorted(ids)
    return ", ".join(map(str, ids[:_SHOWN])) + (", ..." if len(ids) > _SHOWN else "")


def read_results(path: str) -> dict[int, str]:
    """Image id -> caption of a COCO results file [{"image_id": int, "caption": str}], one per image."""
    results = read_json(path)
    if not isinstance(results, list) or not results:
        raise UpdownError(f'{path}: expected a non-empty list of {{"image_id", "caption"}} (predict_caption\'s output)')
    for index, result in enumerate(results):
        image_id = result.get("image_id") if isinstance(result, dict) else None
        if not isinstance(image_id, int) or isinstance(image_id, bool) or not isinstance(result.get("caption"), str):
            raise UpdownError(f'{path}: entry {index} needs an integer "image_id" and a string "caption", '
                              f"got {result!r:.200}")
    counts = Counter(result["image_id"] for result in results)
    duplicated = [image_id for image_id, count in counts.items() if count > 1]
    if duplicated:
        raise UpdownError(f"{path}: image ids captioned more than once: {_few(duplicated)}; keep one caption "
                          "per image")
    return {result["image_id"]: result["caption"] for result in results}


def read_references(path: str) -> dict[int, list[str]]:
    """Image id -> reference captions of a COCO captions file (or Karpathy's dataset_coco.json, all splits)."""
    _, caption_ids, captions = read_captions(path, ALL_KARPATHY_SPLITS)
    references: dict[int, list[str]] = {}
    for image_id, caption in zip(caption_ids, captions):
        references.setdefault(image_id, []).append(caption)
    return references


def check_java() -> None:
    """The toolkit's tokeniser and METEOR run `java`: one clear error when there is none."""
    if shutil.which("java") is None:
        raise UpdownError("java: not found; the COCO caption evaluation (PTB tokeniser, METEOR) needs a Java "
                          "runtime: install one (apt-get install default-jre-headless) and put java on PATH")


def toolkit_scores(references: dict, candidates: dict) -> dict[str, float]:
    """The toolkit's scores of already matched {id: [refs]} and {id: caption}, after PTB tokenisation."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({i: [{"caption": c} for c in refs] for i, refs in references.items()})
    res = tokenizer.tokenize({i: [{"caption": c}] for i, c in candidates.items()})
    scores = dict(zip(METRICS[:4], Bleu(4).compute_score(gts, res, verbose=0)[0]))
    for name, scorer in (("METEOR", Meteor), ("ROUGE_L", Rouge), ("CIDEr", Cider)):
        scores[name] = scorer().compute_score(gts, res)[0]
    return {name: float(scores[name]) for name in METRICS}


def evaluate_captions(annotations_path: str, results_path: str, out: str | None = None) -> dict:
    """Score the results' images against their references; the report (also written to `out`)."""
    candidates = read_results(results_path)
    references = read_references(annotations_path)
    unknown = [image_id for image_id in candidates if not references.get(image_id)]
    if unknown:
        raise UpdownError(f"{results_path}: {len(unknown)} image ids have no captions in {annotations_path}: "
                          f"{_few(unknown)}; score results against the annotations of their split")
    check_java()
    log.info("scoring %d images of %d annotated", len(candidates), len(references))
    report = {"images": len(candidates), **toolkit_scores({i: references[i] for i in candidates}, candidates)}
    if out:
        write_json(out, report, indent=2)
    return report
