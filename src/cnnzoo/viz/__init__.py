"""Pictures of what the networks do: training curves, confusion matrices, the most confident
mistakes, Grad-CAM, attention maps, kernels, feature maps, depthwise-kernel health, and a
self-contained report.html per run.

Why a separate package with lazy imports: matplotlib is an optional extra (`cnnzoo[viz]`), so
importing cnnzoo (or this package) never imports it; each drawing function imports it when
called and draws on its own Agg canvas (no display, no pyplot state). The computations that
need no drawing (Grad-CAM maps, attention maps, depthwise statistics) work without matplotlib.
"""

from __future__ import annotations

from ._mpl import INSTALL_HINT, MatplotlibMissing, Plot, has_matplotlib
from .attention import (AttentionMap, attention_maps, plot_attention, plot_branch_weights, plot_channel_excitation,
                        plot_spatial_attention)
from .curves import plot_accuracy_vs_time
from .eval_plots import (DenoiseCrop, WrongImage, most_confidently_wrong, plot_class_samples, plot_confusion,
                         plot_denoise_crops, plot_per_class_accuracy, plot_wrong_gallery)
from .evaluation import ClassifierOutputs, Samples, augmented_samples, classifier_outputs, samples_from_loader
from .gradcam import GradCAM, default_target_layer, gradcam, plot_gradcam, plot_gradcam_grid
from .kernels import (DepthwiseLayer, Table, compare_depthwise, depthwise_health, depthwise_table, feature_maps,
                      plot_depthwise_health, plot_feature_maps, plot_first_layer_kernels)
from .report import write_report
from .run_end import end_of_run, report_inputs
from .run_plots import RunHistory, plot_run, read_history

__all__ = [
    "INSTALL_HINT", "AttentionMap", "ClassifierOutputs", "DenoiseCrop", "DepthwiseLayer", "GradCAM",
    "MatplotlibMissing", "Plot", "RunHistory", "Samples", "Table", "WrongImage", "attention_maps",
    "augmented_samples", "classifier_outputs", "compare_depthwise", "default_target_layer", "depthwise_health",
    "depthwise_table", "end_of_run", "feature_maps", "gradcam", "has_matplotlib", "most_confidently_wrong",
    "plot_accuracy_vs_time", "plot_attention", "plot_branch_weights", "plot_channel_excitation",
    "plot_class_samples", "plot_confusion",
    "plot_denoise_crops", "plot_depthwise_health", "plot_feature_maps", "plot_first_layer_kernels",
    "plot_gradcam", "plot_gradcam_grid", "plot_per_class_accuracy", "plot_run", "plot_spatial_attention",
    "plot_wrong_gallery", "read_history", "report_inputs", "samples_from_loader", "write_report",
]
