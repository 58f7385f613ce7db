"""Event-camera data for the zoo: tonic pipelines that turn recordings into ``[T, N, 2, H, W]`` batches
(the paper's DVS-Gesture and DVS-CIFAR10 preprocessing), datasets for local copies and for your own
recordings, and a simulated sensor that makes event datasets from labeled images."""
from .datasets import (CIFAR10DVS, EVENT_DTYPE, TONIC_DATASETS, DVSGesture, EventNpz, open_event_dataset,
                       paper_framing, read_event_file, save_event_npz, write_event_folder, write_nmnist_file)
from .framing import CIFAR10_DVS, DVS_GESTURE, EventFraming, check_events, collate_frames
from .loading import build_event_dataset, frame_loader, parse_event_spec, resolve_framing
from .recordings import EventFolder
from .simulate import SaccadeSensor

__all__ = [
    "CIFAR10_DVS", "DVS_GESTURE", "EventFraming", "check_events", "collate_frames", "CIFAR10DVS", "DVSGesture",
    "EventFolder", "EventNpz", "EVENT_DTYPE", "TONIC_DATASETS", "open_event_dataset", "paper_framing", "read_event_file",
    "save_event_npz", "write_event_folder", "write_nmnist_file", "SaccadeSensor", "build_event_dataset",
    "frame_loader", "parse_event_spec", "resolve_framing",
]
