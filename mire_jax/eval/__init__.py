"""Zero-shot evaluation: benchmark loaders (benchmarks/), the published and textbook metrics (metrics.py), the
runner that encodes, searches and scores (runner.py), and the pooling's attention heatmaps (heatmaps.py)."""
