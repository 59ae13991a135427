"""carafe.gateway"""
