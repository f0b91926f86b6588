"""ImageFolder fine-tuning on mmengine's Runner: data, classifier, metric, hooks, train, predict."""
