"""TIPC train/infer certification: configs generated from the registry (``configs.py``), offline
data (``prepare.sh``, ``scenes.py``), the runner scripts and the numeric gates (``gates.py``)."""
