"""carafe.adapters"""
