"""Datasets: download and conversion (download, sbd, context), file layouts (layouts), the torch dataset (dataset)."""
