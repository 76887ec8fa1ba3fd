"""marra: Multi-Agent Resource Re-Allocation.

Move limited, whole resources (doctors first) between cooperating sites as needs change, and
measure how well and how fairly it was done. The README lists the layers; ``docs/`` holds the
data model, the environments, the learners and the measured performance.
"""

__version__ = "0.1.0"
