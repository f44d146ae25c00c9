"""Chapter 14: images and text together: fusion, contrastive learning, a GPT that sees.

Everything runs offline on images the course draws itself, small enough to train on a CPU:

* ``data``: scenes of 1-3 coloured shapes rendered with numpy at 32x32, their captions and
  one-word questions (colour, shape, size, count, presence, left/right), a word vocabulary, and
  (shape, colour) pairs held out of training to test composition (``make_split``);
* ``encoders``: a CNN (``ConvEncoder``: a grid of cells, or one pooled vector), a ViT-style
  ``PatchEncoder`` (patches, position embeddings, a [CLS] token, transformer blocks) and a
  ``TextEncoder``;
* ``fusion``: question answering by early fusion (concatenated features), late fusion (a product
  of one expert per modality) and cross-attention (question tokens attend to image cells),
  against image-only and text-only baselines, with noised or missing inputs (run
  ``multimodal-fusion``);
* ``clip``: a CLIP-style pair of encoders trained with the symmetric InfoNCE loss and a learned
  temperature; retrieval recall@k and zero-shot classification (run ``clip-tiny``);
* ``connector``: a LLaVA-style projector from image patches into the token embeddings of the
  course's ``gpt-tiny-tasks``, which then answers questions about the image (run
  ``gpt-tiny-llava``).

What training at scale costs is in ``llmcourse.costs``. Each module runs on its own:
``python -m llmcourse.multimodal.fusion --help``.
"""
