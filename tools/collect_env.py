"""Print the MFuser environment report (same as ``python -m mfuser.env``)."""
from mfuser.env import main

if __name__ == '__main__':
    main()
