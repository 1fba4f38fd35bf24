"""wyoming"""
