"""Sentence-transformer embeddings of item text in a FAISS index, queried by history and/or request."""

from .retriever import Retriever, recency_weights

__all__ = ["Retriever", "recency_weights"]
