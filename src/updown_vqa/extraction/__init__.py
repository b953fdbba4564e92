"""Extraction: the extractors (grid, boxes, detector regions) and the `extract` driver, above both
`features` (the store, images, RoI pooling) and `detection` (the detectors) that it joins."""
