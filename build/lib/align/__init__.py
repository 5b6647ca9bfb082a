"""The alignment harness's command line: ``python align/run_all.py`` (every step) and one script
per step (``python align/forward.py``). The engine is rsport.alignment (``rsport.align_pair``)."""
