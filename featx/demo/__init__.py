"""The demos: a featx pyramid on a real photo (``featx demo``), and fine-tuning on scikit-learn's digits
(``featx finetune-demo``). They use the library as a user would (models, train, deploy); nothing imports them
but the CLI."""
from featx.demo.finetune import DIGITS_CONFIG, run_finetune_demo
from featx.demo.photo import run_demo

__all__ = ["run_demo", "run_finetune_demo", "DIGITS_CONFIG"]
