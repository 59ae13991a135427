"""carafe.indexer"""
