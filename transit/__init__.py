"""transit"""
