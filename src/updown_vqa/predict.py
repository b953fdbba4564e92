"""Answer every question of a split with a checkpoint: `python -m updown_vqa.predict ckpt=PATH split=test`.

Writes the dataset's submission file (`data=vqa2|vqacp2`: EvalAI's [{"question_id": int, "answer": str}];
`gqa`: [{"questionId": str, "prediction": str}]; `clevr`: [{"question_index": int, "answer": str}]) (and, with `top_k=K`, each
question's K best answers with their scores, for ensembling). The questions are tokenised with the
checkpoint's own vocabulary and answered from its own answer list: no training cache is read. When the
split has annotations, the official accuracy is printed too (`updown_vqa.vqa.inference`).
"""

from __future__ import annotations

from omegaconf import DictConfig

from updown_vqa.core.cli import hydra_command


@hydra_command("predict")
def main(cfg: DictConfig) -> None:
    from updown_vqa.vqa.inference import predict

    predict(cfg)


if __name__ == "__main__":
    main()
