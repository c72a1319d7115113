"""Word lists for the synthetic pretraining corpus: prose vocabulary, tag names and role names.

"think" and "answer" are tag names only as whole words and never together (``formats.TagNamer``), and no role is "User" or "Assistant": the corpus
teaches *generic* in-context format following, and the R1-Zero template's own tags and dialogue
roles must stay unseen (``r1jax.pretrain.corpus.check_clean`` asserts it).
"""
from __future__ import annotations

NOUNS = tuple("""
apple river stone garden window teacher student city market bridge letter number question
problem table chair paper pencil book story song road forest mountain island ocean cloud rain
light shadow clock door house school office doctor farmer baker driver painter singer child
friend family village kingdom castle tower boat train plane engine machine robot computer
program signal message record card list box basket bottle glass cup plate bread cheese milk
water fire wind sand snow ice field flower tree leaf seed root branch bird fish horse dog cat
mouse rabbit lion tiger bear wolf fox owl bee ant shop library museum park street corner
lesson test exam puzzle game rule result value step method plan idea reason process mind
answer conversation user assistant reply note page line word name color shape circle square
triangle bag coin ticket map key lamp mirror picture camera phone radio music voice sound
""".split())

VERBS = tuple("""
asks solves thinks provides writes reads counts adds checks finds opens closes builds carries
paints sings draws moves holds brings takes gives keeps sends calls helps teaches learns plans
explains answers follows leads measures compares sorts lists copies marks names shows tells
""".split())

ADJECTIVES = tuple("""
small large quick slow bright dark quiet loud old new simple careful clever happy calm busy
green blue red yellow white black round square long short warm cold early late first last
""".split())

PREPOSITIONS = ("in", "on", "near", "under", "behind", "beside", "with", "about", "between",
                "within", "from", "into", "over", "after", "before")

# Tag names: ordinary words that suit a "work" slot, a "result" slot, or neither, plus made-up
# syllable strings (``pseudo_word``), so that the skill learned is copying the instruction's names.
WORK_TAGS = tuple("""
work steps scratch notes reasoning calc derivation plan draft trace working sketch process
explain solution method path log chain detail body inner thought think
""".split())
RESULT_TAGS = tuple("""
result final value output reply response out total sum conclusion verdict end ans res val
outcome finding key number answer
""".split())
OTHER_TAGS = tuple("""
item entry name word part note line tag box cell field record row token word label title
color animal city fruit tool place thing list step point unit piece bit node
""".split())

# Descriptions that fill "i.e., <x> … here </x>" exemplars.
WORK_PHRASES = ("working steps", "calculation", "steps", "reasoning steps", "scratch work",
                "worked solution", "derivation", "full work", "step by step work", "notes")
RESULT_PHRASES = ("final result", "result", "final value", "number", "final number",
                  "short reply", "value", "outcome", "total")

ROLE_PAIRS = (
    ("Student", "Tutor"), ("Visitor", "Guide"), ("Client", "Helper"), ("Reader", "Writer"),
    ("Child", "Parent"), ("Caller", "Operator"), ("Player", "Coach"), ("Guest", "Host"),
    ("Customer", "Clerk"), ("Pupil", "Teacher"), ("Learner", "Mentor"), ("Asker", "Solver"),
    ("Person", "Agent"), ("Q", "A"), ("Human", "Bot"), ("Patient", "Doctor"), ("Boy", "Girl"),
    ("Friend", "Expert"), ("Traveler", "Local"), ("Kid", "Robot"), ("Novice", "Master"),
    ("Alice", "Bob"), ("Mira", "Tobin"), ("Sam", "Lee"), ("Judge", "Witness"),
    ("Requester", "Responder"), ("Speaker", "Listener"), ("Seeker", "Oracle"),
)

# Letters weighted roughly by English frequency: random strings of them tokenize into the same
# kinds of pieces as real words, so the copying learned on them applies to any name.
LETTERS = "eeeeeeeeeeeettttttttaaaaaaaaooooooooiiiiiiinnnnnnnsssssshhhhhhrrrrrrddddlllluuummmcccwwffggyyppbbvkjxqz"

SYLLABLES = tuple("ba be bi bo bu da de di do du ka ke ki ko ku la le li lo lu ma me mi mo mu "
                  "na ne ni no nu pa pe pi po pu ra re ri ro ru sa se si so su ta te ti to tu "
                  "va ve vi vo za ze zi zo".split())
