"""The model as a retriever: its folder on disk (weights, tokenizer, the settings it was trained and indexed with),
data-parallel encoding, and `Searcher`, the one object that encodes queries and passages and searches an index."""
from mire_jax.retrieval.searcher import Searcher

__all__ = ["Searcher"]
