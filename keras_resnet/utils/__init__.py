"""What every other package uses: argument checks (`checks`), flag declarations (`flags`) and the one
atomic writer, locks and model loading (`io_utils`). Imports nothing else of the package."""
