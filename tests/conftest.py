import sys
from pathlib import Path

# test helpers (engine_reference, engine_cases, ...) are plain modules beside the tests
sys.path.insert(0, str(Path(__file__).parent))
