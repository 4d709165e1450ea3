"""models package of STARS: the TFRS retrieval model, its layers and its Trainer module."""
from stars.environment import require_keras_2

require_keras_2()
