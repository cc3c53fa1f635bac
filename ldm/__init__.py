"""msd-vpred: Stable Diffusion 1.x/2.x (eps / v-prediction) in MindSpore."""

__version__ = "0.1.0"
