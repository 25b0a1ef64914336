"""Content scanning for the DATA-stage checks (`checks/content.py`): scanners, file inspection, DKIM, DMARC."""
