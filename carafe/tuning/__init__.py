"""carafe.tuning"""
