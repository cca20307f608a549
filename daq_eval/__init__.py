"""Evaluation: YouTube-VIS video AP and tracking metrics, the YouTube-VIS JSON format."""
