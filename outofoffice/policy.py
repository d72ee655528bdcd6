"""The privacy promises of SPEC section 3 as numbers.

Config keys in ``[retention]`` default to these and may only be stricter (shorter):
this module is the one place the promises are written down in code.
"""

MAGIC_LINK_MINUTES = 15
SESSION_DAYS = 30
IP_DAYS = 30
SERVER_LOG_DAYS = 30
SLUG_HOLD_DAYS = 60
DELETION_DAYS = 7

# Not retention promises, but limits the product keeps everywhere (SPEC section 8b).
NAME_MAX = 100
PHONE_MIN, PHONE_MAX, PHONE_MIN_DIGITS = 7, 32, 7
DESCRIPTION_MAX = 4000
REQUEST_BODY_MAX = 64 * 1024

INVITE_DAYS = 7
FORM_TOKEN_HOURS = 12  # a routing page may sit open all evening before the call
