"""marra: Multi-Agent Resource Re-Allocation.

Move limited, whole resources (doctors first) between cooperating sites as needs change, and
measure how well and how fairly it was done. See ``DESIGN.md`` in the shared folder and the
README for the layers.
"""

__version__ = "0.1.0"
