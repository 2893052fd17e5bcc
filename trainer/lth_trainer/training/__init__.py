"""One level's training, as torchvision's reference script shapes it: the setup (setup), the
loop over epochs with its step and epoch hooks (loop), evaluation and precision
(evaluation), and the checkpoint a level resumes from (checkpoint)."""
