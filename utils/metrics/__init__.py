"""Scoring: AP and matching, COCO json and pycocotools, metric curves."""
