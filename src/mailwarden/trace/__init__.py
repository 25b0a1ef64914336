"""The trace: find messages (search), reconstruct their life (correlate), explain their fate
(diagnose, rules) and prove it (evidence, report). Free of any user interface: the command line
and the web tracking center render what these modules return; all reads go through `Store`.
"""
