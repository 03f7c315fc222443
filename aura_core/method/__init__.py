"""The method: AUROC, the methods registry, the Intervention value and its file, fitting, statistics."""
