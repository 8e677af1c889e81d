"""Operations: MLflow tracking + registry promotion gate, DVC versioning. Used by the CLI and KFP components only."""
