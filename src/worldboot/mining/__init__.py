"""Mining unlabelled video: key-frames by optical flow, CDM annotation, stratified selection."""
