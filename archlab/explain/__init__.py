"""Understanding a trained run: attributions (on Captum) and attention maps, with the checks
that tell a faithful explanation from a picture."""

__all__: list[str] = []
