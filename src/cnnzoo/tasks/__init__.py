"""Tasks next to classification: what data, loss and metrics a model is trained and judged on."""
