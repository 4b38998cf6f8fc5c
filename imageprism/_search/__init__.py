"""The search layer: typed columns of embeddings, range search (dedup) and top-k search (index).

``columns`` holds one column class per embedding layout, each owning its exact score and
its arrays; ``range`` finds all pairs within a threshold (through the ``finder`` interface,
with ``hamming`` for packed bits); ``components`` joins those
pairs into groups (dedup's connected linkage); ``topk`` finds the best items for a query. Dedup and the index both build on these modules and on nothing else for search.
"""
