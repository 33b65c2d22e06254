"""Dataset sources, validation, splits and the prepared-dataset layout."""
