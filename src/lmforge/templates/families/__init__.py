"""Template entries by family group, as data: each module holds a list of ``Template`` values.

``lmforge.templates.registry`` assembles them into ``TEMPLATES``. Beside each entry a comment or
its ``note`` says where the format comes from: the family's official chat template (and then
the entry is in the module's ``PROVEN_AGAINST``), or its documented format.
"""
