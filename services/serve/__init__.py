"""The Ray Serve generation graph: text → denoiser (+ adapter) → decoder, behind HTTP, gRPC and a web page.

Start it with ``diffcxr serve [--config serve.yaml]``; deploy it on a cluster with
``serve deploy`` of the config ``diffcxr serve --print-deploy-config`` writes. See docs/SERVING.md.
"""
