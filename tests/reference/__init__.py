"""PyTorch references of cocoa-jax: models (ResNets, CLIP, timm ViTs, the SimSiam CIFAR ResNet-18),
the official COCOA pipeline's work restated (`official_pipeline`) and the official way of each
method (`torch_side`). The tests compare the library with them; the benchmarks time them
(`import tests.reference...` from the repository root). The library never imports them."""
